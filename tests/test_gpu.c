/* The GPU backend against the reference interpreter, in two passes: on the GPU emulator
 * (KEOPS_GPU=emulator: gpu.c's very kernels compiled for the host and run with barriers,
 * race and bounds checks, emulator.h) on every machine, then on the CUDA devices where there
 * are. The output says how many checks ran on each.
 *
 * Without a usable CUDA device (no libcuda.so.1, no device): one line on stdout says why, and
 * only the no-device contract is checked in the second pass - KEOPS_BACKEND_GPU gives
 * KEOPS_ERROR_NO_DEVICE with a message naming CUDA, device_pointers with the CPU (or AUTO
 * resolved to CPU) backend is KEOPS_ERROR_ARGUMENT, AUTO resolves to the CPU, and the context
 * keeps working (a CPU run right after matches the reference).
 *
 * With a device (device 0; device-pointer runs on a stream of their own, host runs on the
 * default stream):
 *   - op matrix: every row of ops.def inside a Sum - EW rows generated from dag_ops (every
 *     argument of dim 3, each one alone of dim 1, all of dim 1; categories rotated so each
 *     argument is a Vi, a Vj and a Pm), the ST/SG/LF/AD rows through formulas; both dtypes,
 *     the axis alternating, every other case through device pointers; coverage checked;
 *   - reduction matrix: every row of reductions.def (LogSumExp with and without formula2),
 *     both axes, both dtypes, K in {1, 3, 10}, formulas of dim 1 and 3, the three sum schemes,
 *     the float64 accumulator; M = 70, N = 600 (several j tiles, a partial row block), every
 *     other configuration through device pointers;
 *   - edges on small-integer data (exact in both dtypes whatever the order of the arithmetic,
 *     so outputs must equal the reference bit for bit, indices and ties included; the LogSumExp
 *     family within (6n + 64) u (1 + |v|)): small M (M = 3, N = 200000, and swapped for axis 0:
 *     the j-split, partial states combined; extremes planted across chunks; host and device
 *     pointers), N = 0 neutral values, NaN/inf inputs, K > N, ties, block-size edges,
 *     M*N > 2^31 (70000 x 40000; on devices only: the emulator would take hours), device id
 *     out of range, a pointer of another device (with 2 GPUs; the emulator has 2), Zero
 *     formulas with device pointers, AUTO resolving to the GPU.
 *
 * Tolerances (matrix): the model shared with test_cpu, in matrix.h. The GPU computes in the
 * dtype with the CPU's vmath polynomials (<= 2 ulp float32, <= 4 ulp float64; float32 Exp
 * through ex2.approx (2 ulp) with the rounding of x log2(e) corrected, a few ulp) and the same
 * lowering, so the CPU's bounds hold. Float32 also flushes denormals to zero (inputs, results,
 * intermediates): each flush moves a value by less than 2^-126; the formulas here never scale
 * a denormal up (no intermediate below 2^-100 is multiplied by more than 2^20), so
 * mx_ftz_term = 2^-100 per term is added to every float32 bound. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emulator.h"
#include "matrix.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define SPLIT_N 50000 /* the interpreter is slow under ASan; still split (N >= 4 * 256 * 2) */
/* Under ASan the matrices run every 4th case (both dtypes, axes and pointer kinds still):
 * what ASan watches is the emulator's and the runtime's C code, not the JIT-compiled
 * kernels, and the Release build runs every case (and checks that every row was). */
#define STRIDE 4
#else
#define SPLIT_N 200000
#define STRIDE 1
#endif

static keops_context *ctx;
static const rt_device *cu; /* ctx's devices: staging where the runs look (set in main) */
static int ndev;
static int emulated; /* this pass runs on the GPU emulator (emu_device.c) */
/* TEST_GPU_BACKEND=cpu: the GPU suite runs with the CPU backend and host arrays (a check of the
 * suite itself - cases, data, tolerances - on machines without a GPU). */
static int dry;

/* ---- runs ------------------------------------------------------------------------------------ */


/* A device copy of `bytes` bytes of host memory h on the current context (0 for 0 bytes). */
static rt_dptr dcopy(const void *h, size_t bytes) {
  rt_dptr d = 0;
  TU_OK(cu->alloc(bytes, &d, &e_));
  if (bytes) TU_OK(cu->htod(d, h, bytes, NULL, &e_));
  return d;
}

/* A non-default stream of device 0 for the device-pointer runs (created in main). */
static rt_stream *test_stream;

/* Runs k on device `dev` with the GPU backend. devp: the inputs and the current contents of the
 * outputs are staged with alloc/htod, the run gets device pointers (asynchronous, on
 * test_stream for device 0), then the test synchronizes that stream and copies back. */
static keops_status gpu_run_ranges(keops_kernel *k, int64_t M, int64_t N, void *const *args,
                                   void *const *outs, int devp, int dev, const keops_ranges *rg) {
  if (dry) devp = 0;
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = dry ? KEOPS_BACKEND_CPU : KEOPS_BACKEND_GPU, .device_id = dev,
                         .device_pointers = devp, .ranges = rg};
  if (!devp) return keops_kernel_run(k, M, N, (const void *const *)args, outs, &o);
  const fe_program *p = rt_kernel_program(k);
  int64_t rows = p->axis ? M : N;
  void *da[FE_MAX_ARGS] = {0}, *dout[2] = {0};
  size_t ob[2] = {0, 0};
  TU_OK(cu->enter(dev, &e_));
  for (int pos = 0; pos < p->args.n; pos++)
    da[pos] = (void *)(uintptr_t)dcopy(args[pos], (size_t)(mx_cat_rows(p->args.cat[pos], M, N) *
                                                           p->args.dim[pos]) * (p->dtype == KEOPS_FLOAT32 ? 4 : 8));
  for (int q = 0; q < p->nout; q++) {
    ob[q] = (size_t)(rows * p->out_dim[q]) * (p->out_dtype[q] == KEOPS_FLOAT32 ? 4 : 8);
    dout[q] = (void *)(uintptr_t)dcopy(outs[q], ob[q]);
  }
  o.stream = dev == 0 ? test_stream : NULL;
  TU_OK(cu->sync(NULL, &e_)); /* the staging copies, on the default stream, come first */
  keops_status st = keops_kernel_run(k, M, N, (const void *const *)da, dout, &o);
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", keops_last_error());
  if (st == KEOPS_OK) { /* the run is asynchronous: wait for its stream, then copy back */
    TU_OK(cu->sync(o.stream, &e_));
    for (int q = 0; q < p->nout; q++)
      if (ob[q]) TU_OK(cu->dtoh(outs[q], (uintptr_t)dout[q], ob[q], NULL, &e_));
  }
  cu->sync(NULL, NULL);
  for (int pos = 0; pos < p->args.n; pos++) cu->free((uintptr_t)da[pos], NULL);
  for (int q = 0; q < p->nout; q++) cu->free((uintptr_t)dout[q], NULL);
  cu->leave();
  if (st != KEOPS_OK) rt_fail(st, "%s", msg); /* keops_last_error() for the caller */
  return st;
}

static keops_status gpu_run(keops_kernel *k, int64_t M, int64_t N, void *const *args,
                            void *const *outs, int devp, int dev) {
  return gpu_run_ranges(k, M, N, args, outs, devp, dev, NULL);
}

/* The matrix runner: P on device 0 (devp: through device pointers). */
static void gpu_prob_run(prob *P, int devp) {
  keops_status st = gpu_run(P->k, P->M, P->N, P->arr, P->out[0], devp, 0);
  ck_assert_msg(st == KEOPS_OK, "%s: GPU run%s: %s", P->what, devp ? " (device pointers)" : "",
                keops_last_error());
}

/* P on device 0, then the reference (edge cases). */
static void prob_run(prob *P, int devp) {
  gpu_prob_run(P, devp);
  mx_prob_reference(P);
}

/* ---- exact comparison (edges) ------------------------------------------------------------------ */

/* Bit-exact comparison (integer data), the LogSumExp family within (6n + 64) u (1 + |v|). */
static void check_exact(const prob *P, int dacc) {
  int lse = P->p->red->family == RF_LSE;
  double u = P->dt == KEOPS_FLOAT32 && !dacc ? 0x1p-24 : 0x1p-53;
  double tol = (6.0 * (double)P->nred + 64) * u + (P->dt == KEOPS_FLOAT32 ? 0x1p-24 : 0);
  for (int o = 0; o < P->p->nout; o++)
    for (int64_t q = 0; q < P->rows * P->p->out_dim[o]; q++) {
      double got = mx_outv(P, 0, o, q), want = mx_outv(P, 1, o, q);
      int ok = isnan(want) ? isnan(got)
               : lse && isfinite(want) ? fabs(got - want) <= tol * (1 + fabs(want))
                                       : got == want;
      ck_assert_msg(ok, "%s: output %d entry %lld (row %lld): GPU %.17g, reference %.17g", P->what,
                    o, (long long)q, (long long)(q / P->p->out_dim[o]), got, want);
    }
}

static keops_kernel *make(const keops_kernel_desc *d) { return mx_make(ctx, d); }

/* ---- the op matrix --------------------------------------------------------------------------- */

static int n_op_cases;

/* _i = case * 2 + dtype; the axis alternates with the case, device pointers with the dtype
 * and the case. */
START_TEST(op_matrix) {
  _i = _i * STRIDE + _i % STRIDE;
  if (_i >= 2 * n_op_cases) return;
  int devp = (_i / 2 + _i) % 2;
  mx_op_case(ctx, &mx_op_cases[_i / 2], (_i / 2) % 2, mx_dtype_of(_i % 2), 100 + (uint64_t)_i,
             gpu_prob_run, devp, devp ? ", device pointers" : "");
}
END_TEST

START_TEST(every_op_row_exercised) {
  ck_assert_msg(n_op_cases > 0, "an EW signature the generator cannot handle, or MAXOPCASES");
  mx_check_every_op_row();
}
END_TEST

/* ---- the reduction matrix ------------------------------------------------------------------- */

static rcfg rcfgs[MAXRCFG];
static int n_rcfgs;

START_TEST(reduction_matrix) {
  _i = _i * STRIDE + _i % STRIDE;
  if (_i >= n_rcfgs) return;
  int devp = _i % 2;
  mx_red_case(ctx, &rcfgs[_i], 70, 600, 5000 + (uint64_t)_i, gpu_prob_run, devp,
              devp ? ", device pointers" : "");
}
END_TEST

START_TEST(every_reduction_row_exercised) { mx_check_every_reduction_row(n_rcfgs); }
END_TEST

/* ---- edges: integer data, exact -------------------------------------------------------------- */

/* Every reduction row, with and without formula2 where allowed. */
typedef struct ecase {
  const red_row *row;
  int f2;
} ecase;
static ecase ecases[2 * MX_NRED];
static int n_ecases;

static void build_ecases(void) {
  for (int r = 0; r < MX_NRED; r++) {
    const red_row *row = red_find(mx_red_names[r]);
    if (row->f2 != F2_REQ) ecases[n_ecases++] = (ecase){row, 0};
    if (row->f2 != F2_NO) ecases[n_ecases++] = (ecase){row, 1};
  }
}

/* x = Vi(2), y = Vj(2): F = x*y, or (x|y) weighted by Square(y)+1 for the LogSumExp family. */
static keops_kernel *make_edge(const ecase *c, int axis, keops_dtype dt, int dacc, int K) {
  static const char *const al[] = {"x = Vi(2)", "y = Vj(2)"};
  int lse = c->row->family == RF_LSE;
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = lse ? "(x|y)" : "x*y", .aliases = al, .n_aliases = 2,
                         .reduction = c->row->name, .axis = tu_axis(axis),
                         .k = c->row->family == RF_KMIN ? K : 0,
                         .formula2 = c->f2 ? "Square(y)+1" : NULL, .dtype = dt,
                         .double_accumulator = dacc};
  return make(&d);
}

/* Integer inputs in [lo, hi] for x (M x 2) and y (N x 2), caller frees xy[0], xy[1]. */
static void ints(int64_t M, int64_t N, int lo, int hi, uint64_t seed, double *xy[2]) {
  tu_rng r = tu_seed(seed);
  for (int a = 0; a < 2; a++) {
    int64_t n = 2 * (a ? N : M);
    xy[a] = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t q = 0; q < n; q++) xy[a][q] = floor(tu_uniform(&r, lo, hi + 1));
  }
}

/* _i over (ecase, axis, dtype) for the per-row edge tests. */
typedef struct sel {
  const ecase *c;
  int axis;
  keops_dtype dt;
} sel;
static sel pick(int i) {
  return (sel){&ecases[i / 4], (i / 2) % 2, i % 2 ? KEOPS_FLOAT64 : KEOPS_FLOAT32};
}

/* One exact check: k on the given doubles, GPU (host or device pointers) against reference. */
static void edge_run(keops_kernel *k, int64_t M, int64_t N, double *xy[2], int devp, int dacc,
                     const char *what) {
  prob P;
  mx_prob_init(&P, k, M, N, NULL, 0, xy, 0);
  snprintf(P.what, sizeof P.what, "%s%s", what, devp ? " (device pointers)" : "");
  prob_run(&P, devp);
  check_exact(&P, dacc);
  mx_prob_free(&P);
}

/* Small M: 3 rows over SPLIT_N (axis 0: swapped), so the runtime splits j across blocks and
 * combines the partial states. Integers in [-20, 20] (sums below 2^24), the extremes +-100 at
 * 5 places and +-99 at 3 across the chunks (ties straddle chunk borders); rows 1, -1, 2 flip
 * min and max. K in {1, 10}, the double accumulator, host and device pointers. */
START_TEST(small_m_split) {
  sel s = pick(_i);
  int64_t M = s.axis ? 3 : SPLIT_N, N = s.axis ? SPLIT_N : 3;
  double *xy[2];
  ints(M, N, -20, 20, 31, xy);
  double *red = xy[s.axis ? 1 : 0], *row = xy[s.axis ? 0 : 1];
  static const int64_t at100[] = {5, 1025, 1026, 99999, SPLIT_N - 1}, at99[] = {7, 1027, 12345};
  for (int q = 0; q < 5; q++)
    red[2 * (at100[q] % SPLIT_N)] = 100, red[2 * (at100[q] % SPLIT_N) + 1] = -100;
  for (int q = 0; q < 3; q++) red[2 * (at99[q] % SPLIT_N)] = 99, red[2 * (at99[q] % SPLIT_N) + 1] = -99;
  static const double rv[6] = {1, -1, -1, 2, 2, 1};
  memcpy(row, rv, sizeof rv);
  int sums = s.c->row->family == RF_SUM || s.c->row->family == RF_LSE;
  for (int dacc = 0; dacc < (s.dt == KEOPS_FLOAT32 && sums ? 2 : 1); dacc++)
    for (int K = 1; K <= (s.c->row->family == RF_KMIN ? 10 : 1); K += 9)
      for (int devp = 0; devp < 2; devp++) {
        keops_kernel *k = make_edge(s.c, s.axis, s.dt, dacc, K);
        char what[200];
        snprintf(what, sizeof what, "small M: %s%s K=%d axis %d %s%s", s.c->row->name,
                 s.c->f2 ? "(formula2)" : "", K, s.axis, mx_dtype_name(s.dt), dacc ? " double acc" : "");
        edge_run(k, M, N, xy, devp, dacc, what);
        keops_kernel_destroy(k);
      }
  free(xy[0]), free(xy[1]);
}
END_TEST

/* The neutral value of output column q of an empty reduction. */
static double neutral(const red_row *row, int idx, int q) {
  if (idx) return -1;
  switch (row->family) {
  case RF_SUM: return 0;
  case RF_MINMAX:
  case RF_KMIN: return row->dir < 0 ? INFINITY : -INFINITY;
  default: return row->fin == FIN_LOG ? -INFINITY : row->fin == FIN_SOFTMAX ? NAN : q == 0 ? -INFINITY : 0;
  }
}

/* N = 0 (axis 1) or M = 0 (axis 0): 5 rows of neutral values (the empty input is NULL). */
START_TEST(empty_reduction) {
  sel s = pick(_i);
  keops_kernel *k = make_edge(s.c, s.axis, s.dt, 0, 3);
  for (int devp = 0; devp < 2; devp++) {
    prob P;
    double *xy[2];
    ints(s.axis ? 5 : 0, s.axis ? 0 : 5, -3, 3, 3, xy);
    mx_prob_init(&P, k, s.axis ? 5 : 0, s.axis ? 0 : 5, NULL, 0, xy, 0);
    free(P.arr[s.axis]), P.arr[s.axis] = NULL;
    snprintf(P.what, sizeof P.what, "empty: %s%s axis %d %s%s", s.c->row->name,
             s.c->f2 ? "(formula2)" : "", s.axis, mx_dtype_name(s.dt), devp ? " device pointers" : "");
    prob_run(&P, devp);
    check_exact(&P, 0);
    for (int o = 0; o < P.p->nout; o++)
      for (int64_t q = 0; q < 5 * P.p->out_dim[o]; q++) {
        double got = mx_outv(&P, 0, o, q);
        double want = neutral(s.c->row, P.p->out_dtype[o] == KEOPS_INT64, (int)(q % P.p->out_dim[o]));
        ck_assert_msg(isnan(want) ? isnan(got) : got == want, "%s: entry %lld is %g, neutral %g",
                      P.what, (long long)q, got, want);
      }
    mx_prob_free(&P);
    free(xy[0]), free(xy[1]);
  }
  keops_kernel_destroy(k);
}
END_TEST

/* NaN, +-inf and 0 among integers in y (component 1 NaN for the second half of j), +-inf in
 * x: Min/Max never pick a NaN, all-NaN gives (+-inf, -1); Sum and LSE propagate as the
 * reference does. */
START_TEST(nan_inf) {
  sel s = pick(_i);
  keops_kernel *k = make_edge(s.c, s.axis, s.dt, 0, 3);
  double *xy[2], sp[4] = {NAN, INFINITY, -INFINITY, 0};
  ints(19, 23, -2, 2, 5, xy);
  for (int64_t j = 0; j < 23; j++) {
    if (j % 4 == 1) xy[1][2 * j] = sp[(j / 4) % 4];
    if (j >= 11) xy[1][2 * j + 1] = NAN;
  }
  for (int64_t i = 0; i < 19; i += 3) xy[0][2 * i] = i % 2 ? INFINITY : -INFINITY;
  char what[160];
  snprintf(what, sizeof what, "NaN/inf: %s%s axis %d %s", s.c->row->name,
           s.c->f2 ? "(formula2)" : "", s.axis, mx_dtype_name(s.dt));
  edge_run(k, 19, 23, xy, _i % 3 == 0, 0, what);
  free(xy[0]), free(xy[1]);
  keops_kernel_destroy(k);
}
END_TEST

/* Float32 Exp on the GPU (vmath.c's exp_gpu_f32 and exp_ex2), one value per row (N = 1, y = 0: the exponent
 * is a pair's, computed in the j loop), against exp in double of the exact exponent, for
 * Exp(x-y) and Exp(c*(x-y)) (c a parameter, folded into exp's scaling: vm_exp_mul), by
 * default and with fast_math. Relative bounds, in units of 2^-23 (a
 * float ulp is 2^-24..2^-23 of the value): ex2.approx is within 2 ulp (the emulator's exp2f
 * within 1); by default Exp(x) adds a few roundings (4 in all), Exp(c*x) also the rounding of
 * c log2(e), |cx| 2^-24 as rounding c*x would; fast_math is CUDA's __expf bound,
 * 2 + 1.17 |cx| ulp. Results below 2^-126 flush to 0: 2^-126 absolute. Overflow to inf,
 * infinities and NaN are checked exactly, and c beyond +-2.3e38 gives NaN (documented). */
START_TEST(float32_exp_bounds) {
  if (dry) return;
  enum { NX = 64 };
  double xs[NX];
  int n = 0;
  for (; n < 48; n++) xs[n] = -87 + n * (175.0 / 47) * 0.999; /* -87 .. 87.8 */
  /* +-FLT_MAX: x log2(e) overflows from a finite x (with fast_math and for Exp(c*x), t is
   * infinite and its residual too; Exp(x) rounds t toward zero, to +-FLT_MAX) */
  const double special[] = {0, 1e-30, -1e-30, 0.5, -0.5, 100, -100, 1e30, -1e30, FLT_MAX, -FLT_MAX,
                            INFINITY, -INFINITY, NAN};
  for (size_t q = 0; q < sizeof special / sizeof *special; q++) xs[n++] = special[q];
  const double cs[] = {1, -2.5, 1e-3, -3e38};
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)", "c = Pm(1)"};
  float x32[NX], y = 0, out[NX];
  for (int q = 0; q < n; q++) x32[q] = (float)xs[q];
  for (int fast = 0; fast < 2; fast++)
    for (int scaled = 0; scaled < 2; scaled++) {
      keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = scaled ? "Exp(c*(x-y))" : "Exp(x-y)", .aliases = al,
                             .n_aliases = 3, .axis = KEOPS_AXIS_J, .fast_math = fast};
      keops_kernel *k = make(&d);
      for (size_t ci = 0; ci < (scaled ? sizeof cs / sizeof *cs : 1); ci++) {
        float c = (float)cs[ci];
        void *args[3] = {x32, &y, &c}, *outs[1] = {out};
        ck_assert_msg(gpu_run(k, n, 1, args, outs, 0, 0) == KEOPS_OK, "%s", keops_last_error());
        for (int q = 0; q < n; q++) {
          double a = scaled ? (double)c * x32[q] : x32[q], want = exp(a), got = out[q];
          int huge_c = scaled && fabs((double)c) > 2.3e38;
          double ulps = fast ? 2 + 1.17 * fabs(a) : 4 + (scaled ? 0.5 * fabs(a) : 0);
          int ok = huge_c      ? isnan(got)
                   : isnan(a)  ? isnan(got)
                   : isinf(a) || want > FLT_MAX ? got == (float)want
                   : fabs(got - want) <= ulps * 0x1p-23 * want + 0x1p-126;
          ck_assert_msg(ok, "%sExp(%s%.9g) = %.9g, want %.9g (c = %g)", fast ? "fast_math " : "",
                        scaled ? "c*" : "", (double)x32[q], got, want, (double)c);
        }
      }
      keops_kernel_destroy(k);
    }
}
END_TEST

/* The documented float32 difference (README): the GPU flushes denormals, the CPU keeps them.
 * Sum_j [Sign(x_i), Exp(x_i)] * y_j with x = {1e-40, -1e-40, -100, 1}, y = 1 (3 j's): the GPU
 * reads the denormals as 0 (Sign 0, Exp 1) and Exp(-100) underflows to 0; the CPU gives
 * Sign +-1 and 3 Exp(-100) = 1.1e-43 (a denormal). Float64 agrees (1e-40 is a normal double). */
START_TEST(float32_denormals) {
  if (dry) return;
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
  const double xs[4] = {1e-40, -1e-40, -100, 1}, ys[3] = {1, 1, 1};
  for (int f64 = 0; f64 < 2; f64++) {
    keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Concat(Sign(x), Exp(x))*y", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J,
                           .dtype = f64 ? KEOPS_FLOAT64 : KEOPS_FLOAT32};
    keops_kernel *k = make(&d);
    void *x = tu_to_dtype(xs, 4, d.dtype), *y = tu_to_dtype(ys, 3, d.dtype);
    for (int gpu = 0; gpu < 2; gpu++) {
      double o64[8];
      float o32[8];
      void *args[2] = {x, y}, *outs[1] = {f64 ? (void *)o64 : (void *)o32};
      keops_run_options cpu = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
      keops_status st = gpu ? gpu_run(k, 4, 3, args, outs, 0, 0)
                            : keops_kernel_run(k, 4, 3, (const void *const *)args, outs, &cpu);
      ck_assert_msg(st == KEOPS_OK, "%s", keops_last_error());
      for (int q = 0; q < 4; q++) {
        double sign = gpu && !f64 && q < 2 ? 0 : q == 0 || q == 3 ? 1 : -1;
        double ex = gpu && !f64 && q < 2 ? 1 : gpu && !f64 && q == 2 ? 0 : exp(f64 ? xs[q] : (float)xs[q]);
        double got_s = f64 ? o64[2 * q] : o32[2 * q], got_e = f64 ? o64[2 * q + 1] : o32[2 * q + 1];
        ck_assert_msg(got_s == 3 * sign, "%s %s row %d: Sign sum %g, want %g", mx_dtype_name(d.dtype),
                      gpu ? "GPU" : "CPU", q, got_s, 3 * sign);
        double tol = (f64 ? 1e-15 : 1e-6) * 3 * ex + (f64 ? 0 : 4 * 0x1p-149); /* denormals: 2^-149 apart */
        ck_assert_msg(fabs(got_e - 3 * ex) <= tol, "%s %s row %d: Exp sum %g, want %g",
                      mx_dtype_name(d.dtype), gpu ? "GPU" : "CPU", q, got_e, 3 * ex);
      }
    }
    free(x), free(y);
    keops_kernel_destroy(k);
  }
}
END_TEST

/* KMin rows with K = 10 over 4 reduced indices (entries 4..9: +inf and -1), and ties: integers
 * in [-1, 1] (a third of the values tie at each level) on sizes across the block size (1, 33,
 * 255, 257, 1100): the smaller index wins, ArgKMin lists tied indices in increasing order. */
START_TEST(k_over_n_and_ties) {
  sel s = pick(_i);
  int kmin = s.c->row->family == RF_KMIN;
  keops_kernel *k = make_edge(s.c, s.axis, s.dt, 0, kmin ? 10 : 3);
  double *xy[2];
  char what[200];
  if (kmin) {
    ints(s.axis ? 5 : 4, s.axis ? 4 : 5, -3, 3, 9, xy);
    snprintf(what, sizeof what, "K > N: %s axis %d %s", s.c->row->name, s.axis, mx_dtype_name(s.dt));
    edge_run(k, s.axis ? 5 : 4, s.axis ? 4 : 5, xy, 0, 0, what);
    free(xy[0]), free(xy[1]);
  }
  static const int64_t sz[] = {1, 33, 255, 257, 1100};
  for (int a = 0; a < 5; a++)
    for (int b = 0; b < 5; b++) {
      ints(sz[a], sz[b], -1, 1, (uint64_t)(a * 5 + b), xy);
      snprintf(what, sizeof what, "ties: %s%s axis %d %s M=%lld N=%lld", s.c->row->name,
               s.c->f2 ? "(formula2)" : "", s.axis, mx_dtype_name(s.dt), (long long)sz[a], (long long)sz[b]);
      edge_run(k, sz[a], sz[b], xy, (a + b) % 2, 0, what);
      free(xy[0]), free(xy[1]);
    }
  keops_kernel_destroy(k);
}
END_TEST

/* Sum of (x|y), dim 1, float32, 70000 x 40000 (2.8e9 pairs): integers in [-2, 2] keep every
 * partial sum exact, so row q is exactly x_q sum y (axis 1) or y_q sum x (axis 0). */
START_TEST(more_than_2_31_pairs) {
  enum { M = 70000, N = 40000 };
  int axis = _i % 2, devp = _i / 2;
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "(x|y)", .aliases = al, .n_aliases = 2, .axis = tu_axis(axis)};
  keops_kernel *k = make(&d);
  tu_rng r = tu_seed(8);
  float *x = malloc(sizeof(float) * M), *y = malloc(sizeof(float) * N);
  double sx = 0, sy = 0;
  for (int i = 0; i < M; i++) sx += x[i] = (float)floor(tu_uniform(&r, -2, 3));
  for (int j = 0; j < N; j++) sy += y[j] = (float)floor(tu_uniform(&r, -2, 3));
  int64_t rows = axis ? M : N;
  float *out = malloc(sizeof(float) * (size_t)rows);
  void *args[2] = {x, y}, *outs[1] = {out};
  ck_assert_msg(gpu_run(k, M, N, args, outs, devp, 0) == KEOPS_OK, "%s", keops_last_error());
  const float *rv = axis ? x : y;
  for (int64_t q = 0; q < rows; q++)
    ck_assert_msg(out[q] == rv[q] * (axis ? sy : sx), "axis %d%s row %lld: %g, want %g", axis,
                  devp ? " device pointers" : "", (long long)q, out[q], rv[q] * (axis ? sy : sx));
  free(x), free(y), free(out);
  keops_kernel_destroy(k);
}
END_TEST

/* ---- devices, pointers, AUTO ------------------------------------------------------------------ */

START_TEST(devices_and_pointers) {
  if (dry) return;
  const char *const al[] = {"x = Vi(3)", "y = Vj(3)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "SqDist(x,y)", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  keops_kernel *k = make(&d);
  ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_GPU); /* AUTO: the GPU */
  float x[3 * 4] = {0}, y[3 * 5] = {0}, out[4];
  void *args[2] = {x, y}, *outs[1] = {out};
  /* an ordinal out of range: NO_DEVICE with a message, then device 0 still works */
  keops_status st = gpu_run(k, 4, 5, args, outs, 0, ndev);
  ck_assert_msg(st == KEOPS_ERROR_NO_DEVICE && *keops_last_error(), "device %d: %s, '%s'", ndev,
                keops_status_string(st), keops_last_error());
  ck_assert_msg(gpu_run(k, 4, 5, args, outs, 1, 0) == KEOPS_OK, "%s", keops_last_error());
  /* host memory given as device pointers: an error, not a crash */
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_GPU, .device_pointers = 1};
  st = keops_kernel_run(k, 4, 5, (const void *const *)args, outs, &o);
  ck_assert_msg(st == KEOPS_ERROR_ARGUMENT || st == KEOPS_ERROR_DEVICE, "host pointers: %s",
                keops_status_string(st));
  ck_assert_msg(gpu_run(k, 4, 5, args, outs, 0, 0) == KEOPS_OK, "%s", keops_last_error());
  if (ndev >= 2) { /* a pointer of device 1 in a run on device 0 */
    TU_OK(cu->enter(1, &e_));
    unsigned long long dx = dcopy(x, sizeof x), dy = dcopy(y, sizeof y), dout = dcopy(out, sizeof out);
    cu->leave();
    void *da[2] = {(void *)(uintptr_t)dx, (void *)(uintptr_t)dy}, *dO[1] = {(void *)(uintptr_t)dout};
    st = keops_kernel_run(k, 4, 5, (const void *const *)da, dO, &o);
    ck_assert_msg(st == KEOPS_ERROR_ARGUMENT, "pointer of device 1 on device 0: %s (%s)",
                  keops_status_string(st), keops_last_error());
    o.device_id = 1; /* the same pointers on their own device */
    ck_assert_msg(keops_kernel_run(k, 4, 5, (const void *const *)da, dO, &o) == KEOPS_OK, "%s",
                  keops_last_error());
    TU_OK(cu->enter(1, &e_));
    TU_OK(cu->sync(NULL, &e_));
    cu->free(dx, NULL), cu->free(dy, NULL), cu->free(dout, NULL);
    cu->leave();
  }
  keops_kernel_destroy(k);
}
END_TEST

/* A formula that simplifies to Zero: with device pointers the device outputs are zeroed (they
 * start as 0x5a bytes), for Sum over either axis and both dtypes; host outputs too. */
START_TEST(zero_formula_device_pointers) {
  const char *const al[] = {"x = Vi(3)", "y = Vj(2)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Zero(3)*Sum(x)+(x-x)", .aliases = al, .n_aliases = 2,
                         .axis = tu_axis(_i % 2), .dtype = _i / 2 ? KEOPS_FLOAT64 : KEOPS_FLOAT32};
  keops_kernel *k = make(&d);
  ck_assert_msg(rt_kernel_program(k)->zero, "%s does not simplify to Zero", d.formula);
  for (int devp = 0; devp < 2; devp++) {
    prob P;
    mx_prob_init(&P, k, 300, 7, NULL, 0, NULL, 1);
    snprintf(P.what, sizeof P.what, "Zero axis %d %s", d.axis, mx_dtype_name(d.dtype));
    prob_run(&P, devp);
    for (int64_t q = 0; q < P.rows * 3; q++)
      ck_assert_msg(mx_outv(&P, 0, 0, q) == 0 && !signbit(mx_outv(&P, 0, 0, q)), "%s%s: entry %lld is %g",
                    P.what, devp ? " device pointers" : "", (long long)q, mx_outv(&P, 0, 0, q));
    mx_prob_free(&P);
  }
  keops_kernel_destroy(k);
}
END_TEST

/* ---- without a device ------------------------------------------------------------------------ */

/* The no-device contract (it holds with a device too where it does not need one's absence). */
START_TEST(no_device_contract) {
  int gpu = rt_gpu_usable(cu);
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "Exp(-SqDist(x,y))", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
  keops_kernel *k = make(&d);
  double xy0[2 * 6], xy1[2 * 9], *xy[2] = {xy0, xy1};
  tu_rng r = tu_seed(3);
  for (int q = 0; q < 12; q++) xy0[q] = tu_uniform(&r, -1, 1);
  for (int q = 0; q < 18; q++) xy1[q] = tu_uniform(&r, -1, 1);
  prob P;
  mx_prob_init(&P, k, 6, 9, NULL, 0, xy, 0);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU, .device_pointers = 1};
  keops_status st = keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[0], &o);
  ck_assert_msg(st == KEOPS_ERROR_ARGUMENT && *keops_last_error(), "device pointers on the CPU: %s",
                keops_status_string(st));
  o.backend = KEOPS_BACKEND_GPU, o.device_pointers = 0, o.device_id = 1000;
  st = keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[0], &o);
  ck_assert_msg(st == KEOPS_ERROR_NO_DEVICE && *keops_last_error(),
                "device 1000: %s, '%s'", keops_status_string(st), keops_last_error());
  if (!gpu) {
    ck_assert_int_eq(keops_kernel_backend(k, NULL), KEOPS_BACKEND_CPU);
    o.backend = KEOPS_BACKEND_AUTO, o.device_id = 0;
    ck_assert_int_eq(keops_kernel_backend(k, &o), KEOPS_BACKEND_CPU);
    o.device_pointers = 1; /* AUTO resolves to the CPU: device pointers are a bad argument */
    st = keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[0], &o);
    ck_assert_msg(st == KEOPS_ERROR_ARGUMENT, "AUTO + device pointers: %s", keops_status_string(st));
    o.backend = KEOPS_BACKEND_GPU;
    for (int devp = 0; devp < 2; devp++) {
      o.device_pointers = devp;
      st = keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[0], &o);
      ck_assert_msg(st == KEOPS_ERROR_NO_DEVICE && strstr(keops_last_error(), "CUDA"),
                    "GPU backend without a device: %s, '%s'", keops_status_string(st),
                    keops_last_error());
    }
    /* a Zero formula with device pointers needs the device too */
    keops_kernel_desc z = {.size = sizeof(keops_kernel_desc), .formula = "Zero(2)", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J};
    keops_kernel *kz = make(&z);
    st = keops_kernel_run(kz, 6, 9, (const void *const *)P.arr, P.out[0], &o);
    ck_assert_msg(st == KEOPS_ERROR_NO_DEVICE, "Zero with device pointers: %s", keops_status_string(st));
    keops_kernel_destroy(kz);
  }
  /* the context still works: a CPU run against the reference */
  o = (keops_run_options){.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU};
  ck_assert_msg(keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[0], &o) == KEOPS_OK,
                "CPU run after the failures: %s", keops_last_error());
  o.backend = KEOPS_BACKEND_REFERENCE;
  ck_assert_msg(keops_kernel_run(k, 6, 9, (const void *const *)P.arr, P.out[1], &o) == KEOPS_OK,
                "%s", keops_last_error());
  for (int q = 0; q < 6; q++)
    ck_assert_msg(fabs(mx_outv(&P, 0, 0, q) - mx_outv(&P, 1, 0, q)) <= 1e-5 * 9, "row %d: CPU %g, ref %g",
                  q, mx_outv(&P, 0, 0, q), mx_outv(&P, 1, 0, q));
  mx_prob_free(&P);
  keops_kernel_destroy(k);
}
END_TEST

/* ---- block-sparse ranges --------------------------------------------------------------------- */

/* Two layouts from keops_ranges_from_matrix, on M = 720, N = 1250 (each axis reads its side).
 * Layout 0, clusters of rows i (M) and j (N) with gaps between them (rows in no block), empty
 * clusters (empty blocks, empty j-ranges), clusters adjacent to each other (merged j-ranges),
 * blocks of fewer and of more rows than a CUDA block (256 or 512), a block whose ranges are
 * all empty and one that keeps none:
 *   i: [0,3) [3,3) [8,560) [560,575) [575,590) [600,700)      (gaps 3..8, 590..600, 700..720)
 *   j: [0,100) [100,130) [130,130) [140,400) [400,401) [450,1200)  (gaps 130..140, 401..450,
 *      1200..1250)
 * Layout 1, many small clusters (5 to 16 rows) kept within a band: many CUDA blocks, each a
 * block of the ranges with a short list (and the runtime's smallest CUDA blocks, 64 threads).
 * Layout 2, two large blocks, so that CUDA blocks keep their dense size: i [0,700) over
 * j [0,100); j [0,100) over i [0,700), j [100,1200) over nothing. */
#define RG_M 720
#define RG_N 1250
static keops_ranges *ranges_layout(int layout) {
  keops_ranges *r = NULL;
  if (layout == 0) {
    static const int64_t ci[] = {0, 3, 3, 3, 8, 560, 560, 575, 575, 590, 600, 700};
    static const int64_t cj[] = {0, 100, 100, 130, 130, 130, 140, 400, 400, 401, 450, 1200};
    static const unsigned char keep[36] = {1, 0, 1, 0, 1, 0, /* [0,3) */
                                           1, 1, 0, 1, 0, 1, /* [3,3) */
                                           0, 0, 0, 1, 1, 1, /* [8,560) */
                                           0, 0, 0, 1, 0, 1, /* [560,575) */
                                           0, 0, 0, 0, 0, 0, /* [575,590) */
                                           1, 0, 1, 1, 1, 1};
    ck_assert_msg(keops_ranges_from_matrix(ci, 6, cj, 6, keep, &r) == KEOPS_OK, "%s", keops_last_error());
    return r;
  }
  if (layout == 2) {
    static const int64_t ci[] = {0, 700}, cj[] = {0, 100, 100, 1200};
    static const unsigned char keep[2] = {1, 0};
    ck_assert_msg(keops_ranges_from_matrix(ci, 1, cj, 2, keep, &r) == KEOPS_OK, "%s", keops_last_error());
    return r;
  }
  int64_t ci[2 * RG_M], cj[2 * RG_N], nci = 0, ncj = 0;
  tu_rng g = tu_seed(4242);
  for (int side = 0; side < 2; side++) {
    int64_t n = side ? RG_N - 30 : RG_M - 20, at = 0, *c = side ? cj : ci, *nc = side ? &ncj : &nci;
    while (at < n) { /* a gap of 0 to 3 rows now and then */
      int64_t len = 5 + (int64_t)tu_uniform(&g, 0, 12), gap = tu_uniform(&g, 0, 1) < 0.3 ? (int64_t)tu_uniform(&g, 0, 4) : 0;
      at += gap;
      int64_t e = at + len < n ? at + len : n;
      c[2 * *nc] = at, c[2 * *nc + 1] = e, (*nc)++, at = e;
    }
  }
  unsigned char *keep = malloc((size_t)(nci * ncj));
  for (int64_t a = 0; a < nci; a++)
    for (int64_t b = 0; b < ncj; b++) { /* a band, with holes */
      int64_t d = b * nci / ncj - a;
      keep[a * ncj + b] = d >= -2 && d <= 2 && (a + b) % 5 != 0;
    }
  ck_assert_msg(keops_ranges_from_matrix(ci, nci, cj, ncj, keep, &r) == KEOPS_OK, "%s", keops_last_error());
  free(keep);
  return r;
}

/* Does output row r of P reduce over index t under rg? */
static int in_ranges(const prob *P, const keops_ranges *rg, int64_t r, int64_t t) {
  int ax = P->p->axis;
  const int64_t *rows = ax ? rg->ranges_i : rg->ranges_j, *sl = ax ? rg->slices_i : rg->slices_j,
                *red = ax ? rg->redranges_j : rg->redranges_i;
  int64_t nb = ax ? rg->n_ranges_i : rg->n_ranges_j;
  for (int64_t b = 0; b < nb; b++)
    if (r >= rows[2 * b] && r < rows[2 * b + 1])
      for (int64_t q = b ? sl[b - 1] : 0; q < sl[b]; q++)
        if (t >= red[2 * q] && t < red[2 * q + 1]) return 1;
  return 0;
}

/* _i = reduction * 4 + axis * 2 + dtype: the three layouts, on host arrays or through device
 * pointers (alternating with _i and the layout), against the reference with the same ranges: the
 * matrix's tolerances (whose sum|F| over every pair bounds the one over the ranges), and every
 * index the GPU gives is one of the row's ranges. */
START_TEST(block_sparse_ranges) {
  static const struct {
    const char *red, *formula;
    int k;
  } reds[] = {{"Sum", "Exp(-SqDist(x,y))*b", 0}, {"Min_ArgMin", "SqDist(x,y)", 0},
              {"ArgKMin", "SqDist(x,y)+b", 3}, {"LogSumExp", "-SqDist(x,y)", 0}};
  static const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)"};
  int axis = (_i / 2) % 2;
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = reds[_i / 4].formula, .aliases = al,
                         .n_aliases = 3, .reduction = reds[_i / 4].red, .axis = tu_axis(axis),
                         .k = reds[_i / 4].k, .dtype = mx_dtype_of(_i % 2)};
  keops_kernel *k = make(&d);
  for (int layout = 0; layout < 3; layout++) {
    int devp = (layout + _i) % 2;
    keops_ranges *rg = ranges_layout(layout);
    prob P;
    mx_prob_init(&P, k, RG_M, RG_N, NULL, 0, NULL, 900 + (uint64_t)_i);
    snprintf(P.what, sizeof P.what, "ranges layout %d: %s axis %d %s%s", layout, d.reduction, axis,
             mx_dtype_name(d.dtype), devp ? " (device pointers)" : "");
    keops_status st = gpu_run_ranges(k, RG_M, RG_N, P.arr, P.out[0], devp, 0, rg);
    ck_assert_msg(st == KEOPS_OK, "%s: GPU run: %s", P.what, keops_last_error());
    keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE, .ranges = rg};
    st = keops_kernel_run(k, RG_M, RG_N, (const void *const *)P.arr, P.out[1], &o);
    ck_assert_msg(st == KEOPS_OK, "%s: reference run: %s", P.what, keops_last_error());
    mx_check_outputs(&P);
    int io = P.p->nout - 1;
    if (P.p->red->outputs & RO_IDX)
      for (int64_t q = 0; q < P.rows * P.p->out_dim[io]; q++) {
        int64_t t = ((int64_t *)P.out[0][io])[q], r = q / P.p->out_dim[io];
        ck_assert_msg(t == -1 || in_ranges(&P, rg, r, t), "%s: row %lld: index %lld is in none of its ranges",
                      P.what, (long long)r, (long long)t);
      }
    mx_prob_free(&P);
    keops_ranges_destroy(rg);
  }
  keops_kernel_destroy(k);
}
END_TEST

/* One pass of the suite on the devices of a context whose KEOPS_GPU is impl. Returns the
 * failures; *checks gets the number of checks run on a device. */
static int run_pass(const char *impl, int *checks) {
  setenv("KEOPS_GPU", impl, 1);
  keops_status st = keops_context_create(&ctx);
  unsetenv("KEOPS_GPU");
  if (st != KEOPS_OK) {
    fprintf(stderr, "test_gpu: no context (KEOPS_GPU=%s): %s\n", impl, keops_last_error());
    return 1;
  }
  kerr e;
  kerr_clear(&e);
  cu = ctx->dev;
  emulated = cu == &rt_emu_device;
  test_stream = NULL;
  int gpu = rt_gpu_usable(cu) && cu->count(&ndev, &e) == KEOPS_OK;
  const char *be = getenv("TEST_GPU_BACKEND");
  dry = !gpu && be && !strcmp(be, "cpu");
  if (dry) printf("test_gpu: TEST_GPU_BACKEND=cpu: the GPU suite runs on the CPU backend\n");
  else if (!gpu) {
    printf("test_gpu: no usable CUDA device (%s), the suite ran on the emulator only\n",
           keops_backend_describe(ctx, KEOPS_BACKEND_GPU));
    fflush(stdout);
  }
  if (gpu && (cu->enter(0, &e) || cu->stream_create(&test_stream, &e))) {
    printf("test_gpu: creating a stream on device 0 failed: %s\n", e.msg);
    return 1;
  }
  if (gpu) cu->leave();
  mx_reset_coverage();
  Suite *s = suite_create(emulated ? "gpu (emulated)" : "gpu");
  TCase *tc = tcase_create("no_device");
  tcase_add_test(tc, no_device_contract);
  suite_add_tcase(s, tc);
  if (gpu || dry) {
    TCase *m = tcase_create("matrix");
    tcase_set_timeout(m, 1800);
    tcase_add_loop_test(m, op_matrix, 0, n_op_cases > 0 ? (2 * n_op_cases + STRIDE - 1) / STRIDE : 0);
    tcase_add_loop_test(m, reduction_matrix, 0, n_rcfgs > 0 ? (n_rcfgs + STRIDE - 1) / STRIDE : 0);
    if (STRIDE == 1) {
      tcase_add_test(m, every_op_row_exercised);
      tcase_add_test(m, every_reduction_row_exercised);
    }
    suite_add_tcase(s, m);
    TCase *ed = tcase_create("edges");
    tcase_set_timeout(ed, 1800);
    tcase_add_loop_test(ed, small_m_split, 0, 4 * n_ecases);
    tcase_add_loop_test(ed, empty_reduction, 0, 4 * n_ecases);
    tcase_add_loop_test(ed, nan_inf, 0, 4 * n_ecases);
    tcase_add_loop_test(ed, k_over_n_and_ties, 0, 4 * n_ecases);
    if (!emulated) tcase_add_loop_test(ed, more_than_2_31_pairs, 0, 4);
    tcase_add_test(ed, devices_and_pointers);
    tcase_add_test(ed, float32_denormals);
    tcase_add_test(ed, float32_exp_bounds);
    tcase_add_loop_test(ed, zero_formula_device_pointers, 0, 4);
    tcase_add_loop_test(ed, block_sparse_ranges, 0, 16);
    suite_add_tcase(s, ed);
  }
  SRunner *r = srunner_create(s);
  srunner_set_fork_status(r, CK_NOFORK); /* CUDA state does not survive fork; coverage tables */
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  *checks = gpu ? srunner_ntests_run(r) : 0;
  srunner_free(r);
  if (test_stream && !cu->enter(0, NULL)) {
    cu->stream_destroy(test_stream, NULL);
    cu->leave();
  }
  keops_context_destroy(ctx);
  return failed;
}

/* The suite runs on the emulator everywhere, then on the CUDA devices where there are. */
int main(void) {
  mx_backend = "GPU", mx_ftz_term = 0x1p-100;
  n_op_cases = mx_build_op_cases(MX_GPU);
  n_rcfgs = mx_build_rcfgs(rcfgs, MAXRCFG);
  build_ecases();
  int emu_checks = 0, dev_checks = 0;
  int failed = run_pass("emulator", &emu_checks);
  printf("test_gpu: %d checks ran on the GPU emulator (more_than_2_31_pairs, 2.8e9 pairs, runs on "
         "devices only)\n", emu_checks);
  failed += run_pass("cuda", &dev_checks);
  printf("test_gpu: %d checks ran on a CUDA device\n", dev_checks);
  return failed != 0;
}
