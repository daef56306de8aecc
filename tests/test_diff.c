/* Randomized differential test: generated formula reductions (tests/fuzz/gen.h: every op row
 * and every reduction row of the tables, both axes, both dtypes, the sum schemes, j-split
 * sizes, every forced CPU target) on the CPU JIT against the reference interpreter, under the
 * measured tolerance model of tests/fuzz/diffcore.h.
 *
 * CI runs a fixed set of cases (seed KEOPS_DIFF_SEED, default below). Long runs:
 *     KEOPS_DIFF_ITERS=5000 build/tests/test_diff             (more cases)
 *     KEOPS_DIFF_SEED=7 KEOPS_DIFF_ITERS=5000 ...             (another stream)
 *     KEOPS_DIFF_SEED=7 KEOPS_DIFF_FIRST=1234 KEOPS_DIFF_ITERS=1 ...   (one case again)
 * A mismatch prints a reproducer on stderr (request, sizes, values - shrunk to one output row
 * and the fewest reduced indices that still fail - and the command that reruns the case).
 * KEOPS_DIFF_VERBOSE=1 prints each case before it runs (2: also the generator's shape table).
 * Case i forces op row i mod (rows) and reduction row i mod (reductions), so that the first
 * cases cover both tables whatever the seed; the rest of each case is random. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_ITERS 100 /* the interpreter and our C code run slower under the sanitizers */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEFAULT_ITERS 100
#endif
#endif
#ifndef DEFAULT_ITERS
#define DEFAULT_ITERS 200
#endif
#define DEFAULT_SEED 20250601u
#define CONTEXT_CASES 400 /* contexts are recreated this often: each keeps every kernel compiled */

static keops_context *ctxs[KD_NTARGET];
static int n_ctx, ctx_uses;
static uint64_t base_seed = DEFAULT_SEED;
static long first_case, n_cases = DEFAULT_ITERS, verbose;
static double inject;

static struct {
  int op[OP_COUNT], red[64], axis[2], dtype[2], scheme[4], target[KD_NTARGET], jsplit, dacc;
  long cases, judged, unjudged, failed, injected;
  int64_t compared, skipped, trig_skipped;
  double worst, slowest;
} cov;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void contexts_reset(void) {
  for (int t = 0; t < KD_NTARGET; t++) keops_context_destroy(ctxs[t]);
  n_ctx = kd_contexts_create(ctxs);
  ctx_uses = 0;
}

START_TEST(shapes_for_every_row) {
  int n = gn_init();
  for (int q = 0; q < n; q++) fprintf(stderr, "test_diff: no call shape found for %s\n", gn_unshaped(q));
  ck_assert_msg(n == 0, "%d op rows have no generated call shape (first: %s): add a hint in "
                        "tests/fuzz/gen.c", n, gn_unshaped(0));
}
END_TEST

/* Case i, draw `attempt`; returns 1 when outputs were compared (and agreed). */
static int run_case(long i, int attempt) {
  gn_case *c = malloc(sizeof *c);
  gn_make(c, (base_seed * 1000003u + (uint64_t)i) * 8 + (uint64_t)attempt, gn_row((int)(i % gn_nrows())),
          (int)(i % gn_nreductions()), (int)(i / gn_nreductions()));
  if (++ctx_uses > CONTEXT_CASES) contexts_reset();
  if (verbose) {
    fprintf(stderr, "case %ld.%d: %s(%s%s%s) k=%d axis=%d %s %s dacc=%d target=%s threads=%d M=%lld N=%lld %s:",
            i, attempt, c->desc.reduction, c->formula, c->desc.formula2 ? ", " : "",
            c->desc.formula2 ? c->desc.formula2 : "", c->desc.k, c->desc.axis == KEOPS_AXIS_J,
            c->desc.dtype == KEOPS_FLOAT32 ? "float32" : "float64", kd_scheme_name(c->desc.sum_scheme),
            c->desc.double_accumulator, kd_target_names[c->target], c->threads, (long long)c->M,
            (long long)c->N, kd_domain_names[c->domain]);
    for (int a = 0; a < c->nalias; a++) fprintf(stderr, " \"%s\"", c->alias[a]);
    fprintf(stderr, "\n");
  }
  int t = c->target;
  for (int q = 0; q < KD_NTARGET && !ctxs[t]; q++) t = (t + 1) % KD_NTARGET;
  ck_assert_msg(ctxs[t], "no CPU target context");
  char rerun[200];
  snprintf(rerun, sizeof rerun, "KEOPS_DIFF_SEED=%llu KEOPS_DIFF_FIRST=%ld KEOPS_DIFF_ITERS=1 tests/test_diff",
           (unsigned long long)base_seed, i);
  keops_kernel *k = NULL;
  double t0 = now();
  keops_status st = keops_kernel_create(ctxs[t], &c->desc, &k);
  ck_assert_msg(st == KEOPS_OK, "case %ld: %s rejected a generated formula the front end accepts: %s (%s)",
                i, c->formula, keops_last_error(), rerun);
  kd_prob P;
  cov.cases++;
  if (kd_prob_init(&P, k, c->M, c->N, c->domain, c->data_seed, NULL)) {
    keops_kernel_destroy(k);
    free(c);
    return 0;
  }
  st = kd_run(&P, 0, c->threads);
  double dt = now() - t0;
  if (dt > cov.slowest) cov.slowest = dt;
  kd_repro rp = {&c->desc, kd_target_names[t], c->threads, c->domain, c->data_seed, rerun};
  if (st != KEOPS_OK) {
    kd_verdict v = {.row = -1};
    snprintf(v.msg, sizeof v.msg, "CPU run failed: %s: %s", keops_status_string(st), keops_last_error());
    kd_print_repro(stderr, &rp, &P, &v);
    ck_abort_msg("case %ld: CPU run failed: %s (%s)", i, keops_last_error(), rerun);
  }
  if (inject && P.rows > 0 && (P.p->red->outputs & RO_VAL)) { /* test the test: see main */
    double u = kd_unit(P.dt);
    if (P.dt == KEOPS_FLOAT32) ((float *)P.out[0][0])[0] += (float)(inject * u * fmax(1, fabs(((float *)P.out[0][0])[0])));
    else ((double *)P.out[0][0])[0] += inject * u * fmax(1, fabs(((double *)P.out[0][0])[0]));
    cov.injected++;
  }
  st = kd_run(&P, 1, 1);
  ck_assert_msg(st == KEOPS_OK, "case %ld: reference run failed: %s (%s)", i, keops_last_error(), rerun);
  kd_verdict v;
  kd_judge(&P, c->data_seed, &v);
  cov.compared += v.compared, cov.skipped += v.skipped, cov.trig_skipped += v.trig_skipped;
  cov.unjudged += v.unjudged;
  if (v.worst > cov.worst) cov.worst = v.worst;
  if (v.mismatch) {
    cov.failed++;
    kd_prob S;
    kd_verdict vs;
    if (kd_shrink(&P, v.row, c->threads, c->data_seed, &S, &vs)) {
      fprintf(stderr, "case %ld (shrunk from M = %lld, N = %lld):\n", i, (long long)c->M, (long long)c->N);
      kd_print_repro(stderr, &rp, &S, &vs);
      kd_prob_free(&S);
    } else {
      fprintf(stderr, "case %ld (not shrinkable):\n", i);
      kd_print_repro(stderr, &rp, &P, &v);
    }
  } else if (v.compared > 0) {
    cov.judged++;
    gn_mark_ops(c->formula, cov.op);
    gn_mark_ops(c->desc.formula2, cov.op);
    for (int r = 0; r < gn_nreductions(); r++)
      if (!strcmp(gn_reduction(r), c->desc.reduction)) cov.red[r] = 1;
    cov.axis[c->desc.axis == KEOPS_AXIS_J] = cov.dtype[c->desc.dtype == KEOPS_FLOAT64] = 1;
    if (!strcmp(c->desc.reduction, "Sum")) cov.scheme[c->desc.sum_scheme] = 1;
    cov.target[t] = 1;
    cov.jsplit |= c->jsplit;
    cov.dacc |= c->desc.double_accumulator;
  }
  kd_prob_free(&P);
  keops_kernel_destroy(k);
  char what[160];
  snprintf(what, sizeof what, "%.150s", v.msg);
  free(c);
  ck_assert_msg(!v.mismatch, "case %ld: CPU and reference differ: %s (reproducer on stderr; %s)", i,
                what, rerun);
  return v.compared > 0;
}

/* A case whose outputs were all ill-conditioned (or empty) is drawn again, a few times, so that
 * the op row it forces is still compared. */
START_TEST(diff_case) {
  for (int attempt = 0; attempt < 4; attempt++)
    if (run_case(first_case + _i, attempt)) break;
}
END_TEST

/* Only for the fixed set from case 0: every row of both tables, both axes and dtypes, every sum
 * scheme, every target the host runs, a j-split and the float64 accumulator were compared. */
START_TEST(everything_covered) {
  if (first_case != 0 || n_cases < gn_nrows()) return;
  for (int q = 0; q < gn_nrows(); q++)
    ck_assert_msg(cov.op[gn_row(q)], "op row %s was never in a compared case", dag_ops[gn_row(q)].name);
  for (int r = 0; r < gn_nreductions(); r++)
    ck_assert_msg(cov.red[r], "reduction %s was never compared", gn_reduction(r));
  ck_assert_msg(cov.axis[0] && cov.axis[1] && cov.dtype[0] && cov.dtype[1], "an axis or dtype was never compared");
  for (int s = 0; s < 4; s++) ck_assert_msg(cov.scheme[s], "sum scheme %s was never compared", kd_scheme_name((keops_sum_scheme)s));
  for (int t = 0; t < KD_NTARGET; t++)
    ck_assert_msg(cov.target[t] || !ctxs[t], "target %s was never compared", kd_target_names[t]);
  ck_assert_msg(cov.jsplit && cov.dacc, "no j-split case or no float64-accumulator case was compared");
}
END_TEST

static long env_long(const char *name, long dflt) {
  const char *s = getenv(name);
  return s && *s ? strtol(s, NULL, 0) : dflt;
}

int main(void) {
  setenv("KEOPS_CACHE_DIR", "off", 1); /* thousands of one-off kernels: not for the disk */
  base_seed = (uint64_t)env_long("KEOPS_DIFF_SEED", DEFAULT_SEED);
  first_case = env_long("KEOPS_DIFF_FIRST", 0);
  n_cases = env_long("KEOPS_DIFF_ITERS", DEFAULT_ITERS);
  verbose = env_long("KEOPS_DIFF_VERBOSE", 0); /* 1: each case; 2: also the shape table */
  /* KEOPS_DIFF_INJECT=x adds x u max(|v|, 1) to the first CPU output value of every case: the
   * share of those cases reported as mismatches is the test's power at that error size */
  inject = getenv("KEOPS_DIFF_INJECT") ? atof(getenv("KEOPS_DIFF_INJECT")) : 0;
  double t0 = now();
  gn_init();
  double tinit = now() - t0;
  if (verbose > 1) gn_dump_shapes(stderr);
  contexts_reset();
  Suite *s = suite_create("diff");
  TCase *tc = tcase_create("diff");
  tcase_set_timeout(tc, 3600); /* only enforced when check forks; CTest has its own */
  tcase_add_test(tc, shapes_for_every_row);
  tcase_add_loop_test(tc, diff_case, 0, (int)n_cases);
  tcase_add_test(tc, everything_covered);
  suite_add_tcase(s, tc);
  int failed = tu_run(s, 0); /* the coverage counts span the cases */
  fprintf(stderr,
          "test_diff: seed %llu, cases %ld..%ld: %ld run, %ld judged, %ld mismatches, %ld not "
          "judgeable; %lld outputs compared, %lld skipped as ill-conditioned, %lld terms with "
          "Sin/Cos arguments past KD_TRIG_MAX; largest |diff|/tol %.3g; slowest compile+run %.2f s; shapes %.2f s\n",
          (unsigned long long)base_seed, first_case, first_case + n_cases - 1, cov.cases, cov.judged,
          cov.failed, cov.unjudged, (long long)cov.compared, (long long)cov.skipped,
          (long long)cov.trig_skipped, cov.worst, cov.slowest, tinit);
  if (inject)
    fprintf(stderr, "test_diff: %ld of %ld cases with an injected error of %g u were mismatches\n",
            cov.failed, cov.injected, inject);
  for (int t = 0; t < KD_NTARGET; t++) keops_context_destroy(ctxs[t]);
  return failed != 0;
}
