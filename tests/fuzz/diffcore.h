/* Differential testing of the CPU JIT against the reference interpreter, shared by the
 * libFuzzer harness (tests/fuzz/fuzz_keops.c) and the randomized suite (tests/test_diff.c).
 * No dependency on check: a mismatch is reported as a verdict with a message, and the caller
 * decides whether to fail a test or trap.
 *
 * Tolerance model. The reference evaluates every pair exactly in double and rounds the reduced
 * result once; the CPU computes in the dtype (unit roundoff u = 2^-24 for float32, 2^-53 for
 * float64). Both read the same inputs (rounded to the dtype once), so every difference comes
 * from the backend's roundings. Formulas here are arbitrary (generated or fuzzed), so the
 * error of a term F(i,j) cannot be bounded from the formula's size alone: cancellation,
 * derivatives and discontinuous ops (Floor, Step, comparisons...) of computed arguments can
 * amplify one rounding without limit. The condition of each term is therefore measured, not
 * assumed: the program's DAG is copied with every node's value multiplied by (1 + delta) and,
 * for rounding ops, offset by eta (delta up to KD_PERT_A u per node and component, eta a few
 * subnormal ulps: what one rounding, a vmath function of <= 8u, or an underflow can do), and
 * the reference evaluates that copy KD_TRIALS times per pair with fresh random deltas. The
 * largest deviation `dev` from the exact value is the term's measured sensitivity, and
 *     tol(F) = C_TERM u max(|F|, 1) + KD_PERT_C dev
 * (C_TERM u max(|F|, 1) is tests/matrix.h's per-term bound for well-conditioned formulas).
 * A term whose perturbed values leave the finite range or change class (finite / NaN / +inf /
 * -inf) is unstable: the outputs it feeds are not compared (counted as skipped). So are terms
 * with an intermediate outside the dtype's range (the reference's double would not overflow
 * where the dtype does) and terms with Sin/Cos arguments past KD_TRIG_MAX_* (below). On top
 * of the terms, the reductions use tests/matrix.h's model with these per-term tolerances:
 *   Sum: sum of term tolerances + (n + 1) u sum|F| (any order or blocking of n terms);
 *   Min/Max/KMin: an index must be the reference's unless the exact values at the two indices
 *     are within the sum of their tolerances (a near tie the dtype cannot order); a value must
 *     be within the tolerance of the term at its index, and within the largest term tolerance
 *     of the reference value (an order statistic moves by at most the largest perturbation);
 *   LogSumExp family: the exponent errors (term tolerance of F, of the maximum, and C_TERM u
 *     (|F - m| + 1) for the shifted argument) enter each weight exp(F - m) relatively, the
 *     weights' tolerances absolutely, 6n u for the online updates; log and softmax ratios
 *     propagate that to first order, and outputs whose sum is not well away from zero are
 *     not compared.
 * Non-finite reference values must be matched exactly (NaN for NaN, infinities by sign). */
#ifndef KEOPS_TESTS_DIFFCORE_H
#define KEOPS_TESTS_DIFFCORE_H

#include <stdint.h>
#include <stdio.h>

#include "front.h"
#include "keops.h"
#include "runtime.h"

#define KD_C_TERM 32.0 /* tests/matrix.h's C_TERM */
#define KD_PERT_A 8.0  /* perturbation per node, in units of u */
#define KD_PERT_C 4.0  /* tolerance per unit of measured deviation */
#define KD_TRIALS 6

/* Limits of the generated cases. K of the KMin family: up to 40, so heaps (K * dim > 16) and
 * the unrolled network are both exercised, with the reference (O(K) a pair) still fast.
 * Sin/Cos terms with arguments past these are not judged: the reduction is exact there too
 * (issue 7), but one unit of roundoff of such an argument moves the result across [-1, 1]. */
#define KD_MAX_K 40
#define KD_TRIG_MAX_F32 1e30
#define KD_TRIG_MAX_F64 1e300
/* Inputs stay within [-KD_VALUE_MAX, KD_VALUE_MAX]. */
#define KD_VALUE_MAX 100.0
/* Problems larger than this are not run (memory and interpreter time). */
#define KD_MAX_ELEMS 200000

/* Input data: uniform in [-2, 2]; positive [0.1, 3]; wide [-100, 100]; a grid of halves in
 * [-2, 2] (zeros and ties on purpose). */
enum { KD_DOM_UNIT, KD_DOM_POS, KD_DOM_WIDE, KD_DOM_GRID, KD_NDOM };
extern const char *const kd_domain_names[KD_NDOM];

/* The forced CPU targets (KEOPS_TARGET), in the order the callers index them. */
enum { KD_NTARGET = 3 };
extern const char *const kd_target_names[KD_NTARGET];
/* Creates a context per forced target with KEOPS_TARGET set (restored after); NULL where the
 * host cannot run a target. Returns how many were created. */
int kd_contexts_create(keops_context *ctxs[KD_NTARGET]);

uint64_t kd_mix(uint64_t x); /* splitmix64: seeds derived from seeds */
typedef struct kd_rng {
  uint64_t s;
} kd_rng;
uint64_t kd_next(kd_rng *r);
double kd_uniform(kd_rng *r, double lo, double hi);
int kd_below(kd_rng *r, int n); /* uniform in [0, n) */

double kd_unit(keops_dtype dt);
const char *kd_scheme_name(keops_sum_scheme s);

/* One kernel on one data set: the CPU's outputs (b = 0) and the reference's (b = 1). */
typedef struct kd_prob {
  keops_kernel *k;
  const fe_program *p;
  keops_dtype dt;
  int64_t M, N, rows, nred;
  double *val[FE_MAX_ARGS]; /* inputs as the kernel sees them (already in the dtype) */
  void *arr[FE_MAX_ARGS];
  void *out[2][2];
} kd_prob;

/* Draws the inputs from domain and seed (vals == NULL) or takes vals[pos] (rounded to the
 * dtype). Returns 0, or -1 when the problem exceeds KD_MAX_ELEMS (nothing allocated). */
int kd_prob_init(kd_prob *P, keops_kernel *k, int64_t M, int64_t N, int domain, uint64_t seed,
                 double *const *vals);
void kd_prob_free(kd_prob *P);
/* Runs backend b (0: CPU with `threads` threads, 1: the reference) into P->out[b]. */
keops_status kd_run(kd_prob *P, int b, int threads);

typedef struct kd_verdict {
  int mismatch;   /* the CPU and the reference disagree beyond tolerance */
  int unjudged;   /* the perturbed copy could not be built: nothing was compared */
  int64_t compared, skipped, trig_skipped;
  int64_t row;    /* first mismatching output row */
  double worst;   /* largest |diff| / tol over compared finite entries */
  char msg[1024];
} kd_verdict;

/* Compares P->out[0] with P->out[1] under the model above (perturbation draws from seed). */
void kd_judge(const kd_prob *P, uint64_t seed, kd_verdict *v);

/* Looks for a smaller problem that still mismatches: the failing output row alone, then
 * halves of the reduced range while the mismatch persists (CPU with `threads` threads).
 * Returns 1 with *S initialised (caller frees) when one was found, else 0. */
int kd_shrink(const kd_prob *P, int64_t row, int threads, uint64_t seed, kd_prob *S,
              kd_verdict *vs);

/* What to print for a reproducer besides the problem. */
typedef struct kd_repro {
  const keops_kernel_desc *desc;
  const char *target;
  int threads, domain;
  uint64_t data_seed;
  const char *rerun; /* how to rerun this case (a command line), or NULL */
} kd_repro;
/* Prints the request, the sizes, every input value (up to a limit; beyond it the data seed
 * says how to draw them again) and the outputs of the failing row. */
void kd_print_repro(FILE *f, const kd_repro *r, const kd_prob *P, const kd_verdict *v);

#endif
