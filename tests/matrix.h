/* The foundation matrix shared by the backend suites (test_cpu, test_gpu): one backend against
 * the reference interpreter on every row of ops.def and reductions.def.
 *
 * What is shared: the op cases (EW rows generated from dag_ops with per-row domains, the
 * hand-written ST/SG/LF/AD formulas), the reduction configurations, the problem setup and the
 * reference run, the tolerance model and the comparisons, and the coverage tables behind the
 * "every row exercised" checks. What a suite keeps: how it runs its backend (targets for the
 * CPU; device pointers for the GPU), its sizes, and its own edge cases.
 *
 * Tolerances. The reference evaluates every pair exactly in double and rounds the result once;
 * the backend computes in the dtype (unit roundoff u = 2^-24 for float32, 2^-53 for float64)
 * with vmath functions of at most 2 ulp (float32) / 4 ulp (float64), i.e. 4u / 8u. Both read
 * the same inputs (rounded to the dtype once, in mx_prob_init), so every difference comes from
 * rounding in the backend, which we bound per term and per sum:
 *   - a term F(i,j): each op rounds once or has <= 8u error, formulas here have a few ops and
 *     their intermediates are at most ~16 times max(|F|, 1) (inputs are O(1): |v| <= 2, so
 *     internal cancellation - (x|y), derivatives - is bounded by O(1) intermediates, not by
 *     |F|): error <= C_TERM u max(|F|, 1), C_TERM = 32;
 *   - a sum of n terms, any order or blocking: <= (n - 1) u sum|F| (recursive summation),
 *     plus one rounding of the output, plus the reference's own double-precision block sum
 *     (<= 2 sqrt(n) u64 sum|F|, below (n+1) u sum|F| for either dtype). Errors are scaled by
 *     sum|F| (from per-pair interp_eval), never by the possibly-cancelling result.
 *   - Min/Max/KMin: a value is the backend's term at its index (C_TERM bound); an index must
 *     be the reference's unless the exact values at the two indices are within 2 term bounds
 *     of each other (a near-tie the dtype cannot order); with well-separated values it must
 *     match exactly. KMin lists must be sorted with distinct indices.
 *   - LogSumExp family, positive weights: each online update is an exp (<= 8u), a multiply
 *     and an add of positive numbers, so each s_e is within (6n + 2 C_TERM max(|F|,1) +
 *     C_TERM) u relatively (the F errors enter through exp(F - m)); log adds it absolutely, a
 *     softmax ratio twice it relatively, the raw m one term bound.
 *   - flush to zero: a backend that flushes float32 denormals (the GPU) sets mx_ftz_term, the
 *     most one term can move by flushing; it is added per term to every float32 bound.
 * Discontinuities: with a rounded argument a discontinuous op can jump by O(1). Here EW ops
 * read variables directly, so only ops that compute an argument internally are at risk: Round
 * with digits (x * 10^d) and Mod ((x - z) / y). Their data lie on grids that keep those
 * arguments away from the jumps (see the EW domains in matrix.c); Floor, Step, Sign,
 * comparisons, IfElse, OneHot and ArgMax/ArgMin are exact on exact inputs and get grids with
 * ties and zeros on purpose. Log near 1, Acos/Asin near +-1 are ill-conditioned only for
 * computed arguments; the domains avoid them anyway, and the sum|F| scale makes the absolute
 * error of a term near a zero harmless. */
#ifndef KEOPS_TESTS_MATRIX_H
#define KEOPS_TESTS_MATRIX_H

#include <stdint.h>

#include "front.h"
#include "keops.h"
#include "runtime.h"
#include "testutil.h"

#define C_TERM 32.0
#define MAXV 5
#define OP_M 37 /* op matrix sizes: not multiples of any lane count, one partial row block */
#define OP_N 29

/* Which suite runs a table entry: the two suites grew different case lists (the GPU one merges
 * several ST rows into one formula to keep device time down), and each keeps its own so that
 * its cases, seeds and check counts stay what they were. */
enum { MX_CPU = 1, MX_GPU = 2, MX_BOTH = 3 };

/* Values uniform in [lo, hi], or (step > 0) on the grid lo, lo + step, ..., hi. */
typedef struct dom {
  double lo, hi, step;
} dom;
#define DFLT {-2, 2, 0}

/* ---- problems: one kernel on one data set, the backend's outputs against the reference ---- */

typedef struct prob {
  keops_kernel *k;
  const fe_program *p;
  keops_dtype dt;
  int64_t M, N, rows, nred;
  double *val[FE_MAX_ARGS]; /* inputs as the kernel sees them (already in the dtype) */
  void *arr[FE_MAX_ARGS];
  void *out[2][2]; /* [0: the backend under test, 1: the reference][output] */
  const keops_ranges *ranges; /* the reference runs with them (the caller's; NULL: dense) */
  char what[700];
} prob;

/* The backend under test, as failure messages name it ("CPU", "GPU"). */
extern const char *mx_backend;
/* Per-term allowance for float32 denormals flushed to zero (0: the backend does not flush). */
extern double mx_ftz_term;
/* Largest |diff| / tol seen, per reduction family and float64-ness: how much of each tolerance
 * the backend uses (suites may print it, to keep the margins honest). */
extern double mx_worst_ratio[4][2];

double mx_unit(keops_dtype dt);
keops_dtype mx_dtype_of(int b); /* 0: float32, 1: float64 */
const char *mx_dtype_name(keops_dtype dt);
const char *mx_scheme_name(keops_sum_scheme s);
int64_t mx_cat_rows(int cat, int64_t M, int64_t N);
/* keops_kernel_create that fails the test with the library's message. */
keops_kernel *mx_make(keops_context *ctx, const keops_kernel_desc *d);

/* Input pos from doms[pos] (ndom of them; [-1, 1] after, for the variables Grad(f, v) adds),
 * or from vals[pos] when vals is given (doubles, rounded to the dtype here). Outputs start as
 * 0x5a bytes, which no output takes: an unwritten entry shows. */
void mx_prob_init(prob *P, keops_kernel *k, int64_t M, int64_t N, const dom *doms, int ndom,
                  double *const *vals, uint64_t seed);
void mx_prob_free(prob *P);
/* The reference run into out[1] (the suite runs its backend into out[0]). */
void mx_prob_reference(prob *P);
double mx_outv(const prob *P, int b, int o, int64_t q);
/* out[0] against out[1] within the tolerance model of the program's reduction family. */
void mx_check_outputs(const prob *P);

/* ---- the op matrix ---------------------------------------------------------------------------- */

typedef struct tvar {
  const char *name;
  int dim;
  dom d;
} tvar;

typedef struct opcase {
  char formula[200];
  int nv, rot; /* variable w is category (w + rot) % 3; ST tables: rotations to run (0: 3) */
  tvar v[MAXV];
} opcase;

#define MAXOPCASES 600
extern opcase mx_op_cases[MAXOPCASES];
/* Builds mx_op_cases for `suite` (MX_CPU or MX_GPU): the EW cases generated from the table,
 * then the suite's ST cases in their rotations. Returns the count, or -1 when a row has a
 * signature the generator cannot handle or MAXOPCASES is too small (a test checks it). */
int mx_build_op_cases(int suite);

/* Runs the backend under test on P into P->out[0] (how: the suite's own option, e.g. device
 * pointers); failures are the runner's to report. */
typedef void (*mx_runner)(prob *P, int how);

/* One op case: Sum over axis of case c in dtype dt on an OP_M x OP_N data set drawn from seed,
 * created on ctx, run by run(P, how) and by the reference, compared, its rows marked covered.
 * suffix ends the case's description in failure messages (the target, device pointers). */
void mx_op_case(keops_context *ctx, const opcase *c, int axis, keops_dtype dt, uint64_t seed,
                mx_runner run, int how, const char *suffix);
/* Fails unless every row of ops.def was compiled and checked by some mx_op_case. */
void mx_check_every_op_row(void);
void mx_reset_coverage(void); /* forget which rows were checked (a new pass of a suite) */

/* ---- the reduction matrix ----------------------------------------------------------------- */

typedef struct rcfg {
  const red_row *row;
  int f2, K, wide, axis, dacc, target; /* target: the suite's (the CPU's forced target) */
  keops_dtype dt;
  keops_sum_scheme scheme;
} rcfg;

/* The rows of reductions.def, in its order. */
enum {
  MX_NRED = 0
#define X(name, family, dir, outputs, f2, weight1, fin) +1
#include "reductions.def"
#undef X
};
extern const char *const mx_red_names[MX_NRED];

#define MAXRCFG 512
/* Every row of reductions.def (with and without formula2 where allowed), both axes, both
 * dtypes, K in {1, 3, 10}, formulas of dim 1 and 3, the sum schemes and the float64
 * accumulator for float32; target 0. Returns the count, or -1 if max is too small. */
int mx_build_rcfgs(rcfg *out, int max);
/* One reduction configuration on an M x N data set drawn from seed, as mx_op_case does. */
void mx_red_case(keops_context *ctx, const rcfg *g, int64_t M, int64_t N, uint64_t seed,
                 mx_runner run, int how, const char *suffix);
/* Fails unless every row of reductions.def was checked by some mx_red_case (and n_rcfgs, the
 * configuration count, says they fitted). */
void mx_check_every_reduction_row(int n_rcfgs);

#endif
